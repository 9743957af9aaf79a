//! In-memory [`KubeApi`] that records every write, for reconcile tests.
//!
//! Apply merges the applied object into the stored one (objects merge,
//! everything else is replaced), which is what server-side apply does to
//! fields other managers own: foreign annotations and defaults survive.
//!
//! Stored objects get a uid, and deletions run a small garbage collector:
//! dependents (by owner reference) of a deleted object or of a `postgresql`
//! whose last finalizer is removed are deleted, or with `Orphan` propagation
//! lose the reference, so tests can see what owner references would destroy.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use pgherd_shared::crd::{Postgresql, PostgresqlStatus};
use serde_json::Value;

use crate::kube_api::{ApiError, Created, Event, Kind, KubeApi, ObjectKey, Propagation};

/// One mutating call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Apply(ObjectKey),
    Create(ObjectKey),
    /// A merge patch, with its body.
    Patch(ObjectKey, Value),
    Delete(ObjectKey, Propagation),
    Status(String),
    Finalizers(String, Vec<String>),
}

#[derive(Default)]
struct State {
    objects: BTreeMap<ObjectKey, Value>,
    postgresqls: BTreeMap<(String, String), Postgresql>,
    writes: Vec<Write>,
    events: Vec<Event>,
    fail_apply_of: Option<Kind>,
}

#[derive(Default)]
pub struct FakeApi {
    state: Mutex<State>,
}

fn pg_key(pg: &Postgresql) -> (String, String) {
    (
        pg.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pg.metadata.name.clone().unwrap_or_default(),
    )
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Gives a stored object a uid, as the API server does.
fn with_uid(key: &ObjectKey, mut obj: Value) -> Value {
    if obj.pointer("/metadata/uid").is_none() {
        obj["metadata"]["uid"] = Value::String(format!("uid-{key}"));
    }
    obj
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str).map(String::from))
        .collect()
}

impl State {
    /// Owner `uid` is gone: delete its dependents (and theirs), or orphan them.
    fn collect_garbage(&mut self, uid: String, propagation: Propagation) {
        let mut gone = vec![uid];
        while let Some(uid) = gone.pop() {
            let dependents: Vec<ObjectKey> = self
                .objects
                .iter()
                .filter(|(_, o)| owner_uids(o).contains(&uid))
                .map(|(k, _)| k.clone())
                .collect();
            for key in dependents {
                if propagation == Propagation::Orphan {
                    let obj = self.objects.get_mut(&key).expect("listed");
                    if let Some(refs) = obj
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(&uid));
                    }
                } else if let Some(obj) = self.objects.remove(&key) {
                    gone.extend(
                        obj.pointer("/metadata/uid")
                            .and_then(Value::as_str)
                            .map(String::from),
                    );
                }
            }
        }
    }
}

fn labels_match(obj: &Value, labels: &BTreeMap<String, String>) -> bool {
    let Some(have) = obj.pointer("/metadata/labels").and_then(Value::as_object) else {
        return labels.is_empty();
    };
    labels
        .iter()
        .all(|(k, v)| have.get(k).and_then(Value::as_str) == Some(v.as_str()))
}

impl FakeApi {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake state lock")
    }

    /// Stores a `postgresql` as if a user had applied it.
    pub fn put_postgresql(&self, pg: &Postgresql) {
        self.lock().postgresqls.insert(pg_key(pg), pg.clone());
    }

    /// The stored version of `pg` (status and finalizers as last written).
    pub fn postgresql(&self, pg: &Postgresql) -> Postgresql {
        self.lock()
            .postgresqls
            .get(&pg_key(pg))
            .cloned()
            .unwrap_or_else(|| pg.clone())
    }

    /// Places an object directly, like another controller or a user would.
    pub fn put(&self, obj: Value) {
        let key = ObjectKey::of(&obj).expect("kind, namespace and name");
        let obj = with_uid(&key, obj);
        self.lock().objects.insert(key, obj);
    }

    pub fn object(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Mutates a stored object in place (simulates defaulting, webhooks, users).
    pub fn edit(&self, key: &ObjectKey, f: impl FnOnce(&mut Value)) {
        if let Some(o) = self.lock().objects.get_mut(key) {
            f(o);
        }
    }

    pub fn keys(&self) -> Vec<ObjectKey> {
        self.lock().objects.keys().cloned().collect()
    }

    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Forgets recorded writes and events (not objects).
    pub fn reset_counters(&self) {
        let mut s = self.lock();
        s.writes.clear();
        s.events.clear();
    }

    /// Makes every apply of `kind` fail, to exercise error reporting.
    pub fn fail_apply_of(&self, kind: Option<Kind>) {
        self.lock().fail_apply_of = kind;
    }
}

#[async_trait]
impl KubeApi for FakeApi {
    async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, ApiError> {
        Ok(self.lock().objects.get(key).cloned())
    }

    async fn apply(&self, key: &ObjectKey, obj: &Value) -> Result<(), ApiError> {
        let mut s = self.lock();
        if s.fail_apply_of == Some(key.kind) {
            return Err(ApiError::request("apply", key, "injected failure"));
        }
        s.writes.push(Write::Apply(key.clone()));
        match s.objects.get_mut(key) {
            Some(existing) => merge(existing, obj),
            None => {
                s.objects.insert(key.clone(), with_uid(key, obj.clone()));
            }
        }
        Ok(())
    }

    async fn create(&self, key: &ObjectKey, obj: &Value) -> Result<Created, ApiError> {
        let mut s = self.lock();
        s.writes.push(Write::Create(key.clone()));
        if s.objects.contains_key(key) {
            return Ok(Created::AlreadyExisted);
        }
        s.objects.insert(key.clone(), with_uid(key, obj.clone()));
        Ok(Created::Created)
    }

    async fn merge_patch(&self, key: &ObjectKey, patch: &Value) -> Result<(), ApiError> {
        let mut s = self.lock();
        let obj = s
            .objects
            .get_mut(key)
            .ok_or_else(|| ApiError::request("patch", key, "not found"))?;
        crate::fake_patroni::merge_patch(obj, patch);
        s.writes.push(Write::Patch(key.clone(), patch.clone()));
        Ok(())
    }

    async fn delete(&self, key: &ObjectKey, propagation: Propagation) -> Result<(), ApiError> {
        let mut s = self.lock();
        s.writes.push(Write::Delete(key.clone(), propagation));
        let uid = s
            .objects
            .remove(key)
            .and_then(|o| o.pointer("/metadata/uid")?.as_str().map(String::from));
        if let Some(uid) = uid {
            s.collect_garbage(uid, propagation);
        }
        Ok(())
    }

    async fn list(
        &self,
        kind: Kind,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        Ok(self
            .lock()
            .objects
            .iter()
            .filter(|(k, o)| k.kind == kind && k.namespace == namespace && labels_match(o, labels))
            .map(|(_, o)| o.clone())
            .collect())
    }

    async fn patch_status(
        &self,
        pg: &Postgresql,
        status: &PostgresqlStatus,
    ) -> Result<(), ApiError> {
        let mut s = self.lock();
        let key = pg_key(pg);
        s.writes.push(Write::Status(key.1.clone()));
        let stored = s.postgresqls.entry(key).or_insert_with(|| pg.clone());
        stored.status = Some(status.clone());
        Ok(())
    }

    async fn set_finalizers(&self, pg: &Postgresql, finalizers: &[String]) -> Result<(), ApiError> {
        let mut s = self.lock();
        let key = pg_key(pg);
        s.writes
            .push(Write::Finalizers(key.1.clone(), finalizers.to_vec()));
        let stored = s
            .postgresqls
            .entry(key.clone())
            .or_insert_with(|| pg.clone());
        stored.metadata.finalizers = Some(finalizers.to_vec());
        // A deleted object disappears once its last finalizer is gone.
        if finalizers.is_empty() && stored.metadata.deletion_timestamp.is_some() {
            let uid = stored.metadata.uid.clone();
            s.postgresqls.remove(&key);
            if let Some(uid) = uid {
                s.collect_garbage(uid, Propagation::Background);
            }
        }
        Ok(())
    }

    async fn publish(&self, _pg: &Postgresql, event: &Event) -> Result<(), ApiError> {
        self.lock().events.push(event.clone());
        Ok(())
    }
}
