//! The object store: every object of every kind in memory, one global resourceVersion, and the rules of
//! writes — uid and creationTimestamp, optimistic concurrency (`409` on a stale resourceVersion, also when
//! a patch carries one), `generation` bumped on spec changes only, the status subresource, no-op writes
//! that change nothing (not even the resourceVersion), managed fields on every write, server-side apply.
//! Deletion, finalizers and garbage collection are in gc.rs.
//!
//! Controllers added later use this API directly (the HTTP layer is a thin shell over it).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use serde_json::{json, Value};

use super::apply::{self, read_entries};
use super::defaults::IpAllocator;
use super::error::{Error, Result};
use super::events;
use super::patch;
use super::resources::{Registry, ResourceType};
use super::select::Selectors;
use super::watch::{EventType, Filter, History, WatchEvent, Watcher};
use super::write::{with_status_of, writer};

/// Who writes and how.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// The field manager (`fieldManager`, else derived from the User-Agent).
    pub manager: String,
    /// `dryRun=All`: everything but storing.
    pub dry_run: bool,
    /// Server-side apply's `force`.
    pub force: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub grace_period: Option<i64>,
    pub dry_run: bool,
}

/// The state behind the store's lock; gc.rs adds deletion to it.
pub(super) struct Inner {
    pub rv: u64,
    /// storage key → (namespace, name) → object in storage form
    pub objects: HashMap<String, BTreeMap<(String, String), Value>>,
    /// uid → (storage, namespace, name)
    pub uids: HashMap<String, (String, String, String)>,
    pub history: History,
    pub ips: IpAllocator,
    pub(super) seq: u64,
}

pub struct Store {
    pub(super) inner: Mutex<Inner>,
    pub(super) registry: RwLock<Registry>,
    pub(super) graceful_pods: AtomicBool,
}

pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(super) fn meta<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o.get("metadata")?.get(k)?.as_str()
}

pub(super) fn set_meta(o: &mut Value, k: &str, v: Value) {
    if !o["metadata"].is_object() {
        o["metadata"] = json!({});
    }
    let m = o["metadata"].as_object_mut().expect("metadata");
    if v.is_null() {
        m.remove(k);
    } else {
        m.insert(k.into(), v);
    }
}

impl Store {
    pub fn new(history: usize) -> Arc<Self> {
        Arc::new(Store {
            inner: Mutex::new(Inner::new(history)),
            registry: RwLock::new(Registry::builtin()),
            graceful_pods: AtomicBool::new(false),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The served type of a group, version and plural.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.registry().find(group, version, plural)
    }

    /// The served type of an `apiVersion` and `kind`.
    pub fn kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.registry().find_kind(api_version, kind)
    }

    /// Pod deletion waits for a kubelet (the pod runner) to confirm with a zero grace period, as upstream.
    /// Off without a runner: pods are then deleted at once.
    pub fn set_graceful_pod_deletion(&self, on: bool) {
        self.graceful_pods.store(on, Ordering::SeqCst);
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Forgets the watch history, so watches from any earlier version get `410 Gone`.
    pub fn compact(&self) {
        let mut inner = self.lock();
        let rv = inner.rv;
        inner.history.compact(rv);
    }

    fn storage_rt(&self, rt: &ResourceType) -> Arc<ResourceType> {
        let storage = rt.storage();
        self.registry()
            .by_storage(&storage)
            .unwrap_or_else(|| Arc::new(rt.clone()))
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value> {
        let inner = self.lock();
        let o = inner.get(&rt.storage(), ns, name).cloned();
        o.map(|o| events::to_view(rt, o))
            .ok_or_else(|| Error::not_found(rt, name))
    }

    /// Objects in `ns` (all namespaces when `None`) matching `sel`, sorted by namespace and name, starting
    /// after `after`, at most `limit`; with the list's resourceVersion and the key to continue from.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selectors,
        after: Option<(String, String)>,
        limit: Option<usize>,
    ) -> (Vec<Value>, u64, Option<(String, String)>) {
        let inner = self.lock();
        let mut items = Vec::new();
        let (mut next, mut last) = (None, None);
        if let Some(objs) = inner.objects.get(&rt.storage()) {
            let start = match &after {
                Some(k) => std::ops::Bound::Excluded(k.clone()),
                None => std::ops::Bound::Unbounded,
            };
            for (key, o) in objs.range((start, std::ops::Bound::Unbounded)) {
                if ns.is_some_and(|n| key.0 != n) || !sel.matches(o) {
                    continue;
                }
                if limit.is_some_and(|l| items.len() >= l) {
                    next = last;
                    break;
                }
                last = Some(key.clone());
                items.push(events::to_view(rt, o.clone()));
            }
        }
        (items, inner.rv, next)
    }

    pub fn create(
        &self,
        rt: &ResourceType,
        ns: &str,
        obj: Value,
        w: &WriteOptions,
    ) -> Result<Value> {
        let srt = self.storage_rt(rt);
        let obj = events::to_storage(rt, obj);
        let mut inner = self.lock();
        let o = inner.create(&self.registry, &srt, ns, obj, w, None)?;
        Ok(events::to_view(rt, o))
    }

    /// PUT of the object or (`status`) its status; the bool says whether it was created.
    pub fn update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        obj: Value,
        status: bool,
        w: &WriteOptions,
    ) -> Result<(Value, bool)> {
        let srt = self.storage_rt(rt);
        let mut obj = events::to_storage(rt, obj);
        let mut inner = self.lock();
        let Some(old) = inner.get(&srt.storage(), ns, name).cloned() else {
            if rt.create_on_update && !status {
                let o = inner.create(&self.registry, &srt, ns, obj, w, None)?;
                return Ok((events::to_view(rt, o), true));
            }
            return Err(Error::not_found(rt, name));
        };
        if status {
            obj = with_status_of(&old, &obj);
        }
        let o = inner.finish_update(&self.registry, &srt, &old, obj, status, w, None)?;
        Ok((events::to_view(rt, o), false))
    }

    /// PATCH of the object or (`status`) its status; server-side apply creates a missing object.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        status: bool,
        w: &WriteOptions,
    ) -> Result<(Value, bool)> {
        let srt = self.storage_rt(rt);
        let mut inner = self.lock();
        let old = inner.get(&srt.storage(), ns, name).cloned();
        if ptype == PatchType::Apply {
            if w.manager.is_empty() {
                return Err(Error::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
            }
            for (k, want) in [("apiVersion", rt.api_version()), ("kind", rt.kind.clone())] {
                if body.get(k).and_then(Value::as_str) != Some(want.as_str()) {
                    return Err(Error::bad_request(format!(
                        "{k} must be {want} in an apply patch"
                    )));
                }
            }
            if meta(body, "name").is_some_and(|n| n != name) {
                return Err(Error::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            let applied = events::to_storage(rt, body.clone());
            let live = old.clone().unwrap_or_else(|| json!({}));
            let mut entries = read_entries(&live);
            let now = now();
            let api_version = rt.api_version();
            let wr = writer(&srt, w, &api_version, status, &now);
            let merged = apply::apply(&live, &applied, &mut entries, w.force, &wr)
                .map_err(|cs| super::write::conflict_error(rt, name, &cs))?;
            let o = match old {
                None if status => return Err(Error::not_found(rt, name)),
                None => {
                    let mut m = merged;
                    set_meta(&mut m, "name", json!(name));
                    let o = inner.create(&self.registry, &srt, ns, m, w, Some(entries))?;
                    return Ok((events::to_view(rt, o), true));
                }
                Some(old) => inner.finish_update(
                    &self.registry,
                    &srt,
                    &old,
                    merged,
                    status,
                    w,
                    Some(entries),
                )?,
            };
            return Ok((events::to_view(rt, o), false));
        }
        let old = old.ok_or_else(|| Error::not_found(rt, name))?;
        let mut doc = events::to_view(rt, old.clone());
        match ptype {
            PatchType::Merge => patch::merge_patch(&mut doc, body),
            PatchType::Json => patch::json_patch(&mut doc, body).map_err(|e| Error::new(422, "Invalid", e))?,
            PatchType::Strategic if !rt.builtin => {
                return Err(Error::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ))
            }
            PatchType::Strategic => patch::strategic_merge(&mut doc, body).map_err(Error::bad_request)?,
            PatchType::Apply => unreachable!(),
        }
        let mut new = events::to_storage(rt, doc);
        if status {
            new = with_status_of(&old, &new);
        }
        let o = inner.finish_update(&self.registry, &srt, &old, new, status, w, None)?;
        Ok((events::to_view(rt, o), false))
    }

    /// Delete; the bool says whether the object is gone (else it waits for finalizers or a kubelet).
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool)> {
        let srt = self.storage_rt(rt);
        let graceful = self.graceful_pods.load(Ordering::SeqCst);
        let mut inner = self.lock();
        let (o, gone) = inner.delete(&self.registry, &srt, ns, name, opts, graceful)?;
        Ok((events::to_view(rt, o), gone))
    }

    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        sel: &Selectors,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>> {
        let (items, _, _) = self.list(rt, ns, sel, None, None);
        let mut out = Vec::new();
        for i in items {
            let (ins, iname) = (
                meta(&i, "namespace").unwrap_or_default(),
                meta(&i, "name").unwrap_or_default(),
            );
            match self.delete(rt, ins, iname, opts) {
                Ok((o, _)) => out.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A watch from `rv` (`None` or 0: the current objects as ADDED first). `initial_events` is
    /// `sendInitialEvents=true`: the same, ended by a bookmark with `k8s.io/initial-events-end`.
    pub fn watch(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        selectors: Selectors,
        rv: Option<u64>,
        initial_events: bool,
        bookmark_every: Option<std::time::Duration>,
    ) -> Watcher {
        let filter = Filter {
            storage: rt.storage(),
            namespace: ns.map(String::from),
            selectors,
        };
        let inner = self.lock();
        let from = match rv {
            Some(v) if v > 0 && !initial_events => v,
            _ => inner.rv,
        };
        let (past, rx) = match inner.history.since(from) {
            Ok(x) => x,
            Err(oldest) => return Watcher::expired(from, oldest),
        };
        let mut initial = Vec::new();
        if from == inner.rv && (rv.unwrap_or(0) == 0 || initial_events) {
            for o in inner
                .objects
                .get(&rt.storage())
                .into_iter()
                .flat_map(|m| m.values())
            {
                if filter.matches(o) {
                    initial.push(WatchEvent::Object(EventType::Added, o.clone()));
                }
            }
            if initial_events {
                initial.push(WatchEvent::Bookmark {
                    rv: inner.rv,
                    initial_events_end: true,
                });
            }
        }
        Watcher::new(filter, initial, past, rx, from, bookmark_every)
    }
}
